"""The CNI protocol, both sides. Pure: nothing here touches the kernel (no pycni.net import)."""
