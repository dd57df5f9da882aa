from cnnstudy.models.convnet import ConvNet
from cnnstudy.models.mlp import MLP
from cnnstudy.models.resnet import ResNetDeep

__all__ = ["MLP", "ConvNet", "ResNetDeep"]
