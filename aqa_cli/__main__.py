from aqa_cli.cli.main import main

main()
