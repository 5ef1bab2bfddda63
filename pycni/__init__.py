"""pycni: Docker-style container networking as CNI plugins.

Importing the package is free on purpose: plugin executables pay for every import on every
call, so nothing is re-exported here. Import the modules you need (``pycni.cni.errors``...).
"""
