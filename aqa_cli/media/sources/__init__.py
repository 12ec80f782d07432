"""Input adapters: each turns one kind of dataset on disk into `Sample` descriptions for the writer."""
