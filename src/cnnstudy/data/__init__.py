from cnnstudy.data.datamodule import ImageDataModule

__all__ = ["ImageDataModule"]
