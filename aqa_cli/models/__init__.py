"""Layer 3: video ResNet backbones as data over torchvision's VideoResNet, public pretrained weights,
input normalization, the AQA heads (clip layers, aggregations, regressor x difficulty) and provenance."""
