"""The per-channel statistics every image pipeline normalises with. No TensorFlow, no JAX, so
both the tf.data pipelines (`jwsol.data.augment`) and JAX-side code (the offline pretraining,
`jwsol.weights.pretrain`) read the same numbers."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's per-channel mean of [0, 1] RGB pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
