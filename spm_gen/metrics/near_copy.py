"""The near-copy distance, in one place (light: the command line's defaults read it before torch loads)."""

# A sample within this RMS pixel distance of an image is a near-copy of it: on the digits 99.9% of training
# images are farther than this from every other one. Every measure and default uses it.
NEAR_COPY_RMS = 0.04


def rms_scale(image_shape) -> float:
    """sqrt(C * H * W): a Euclidean distance of [0, 1] images divided by it is their RMS pixel difference."""
    import math

    return math.sqrt(math.prod(image_shape))
