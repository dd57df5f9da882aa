from cnnstudy.models.convnet import ConvNet
from cnnstudy.models.resnet import ResNetDeep

__all__ = ["ConvNet", "ResNetDeep"]
