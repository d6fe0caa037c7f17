"""Image-quality core: decoding, metrics, classifier. Pure Python over bytes and arrays."""
