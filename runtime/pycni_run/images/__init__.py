"""Images loaded from files (``pycni-run load``), stored layer by layer, run by ``run IMAGE``.

``source`` reads an archive, a directory or stdin; ``manifest`` finds its images; ``config``
reads an image's config and merges it into a container's spec; ``unpack`` (with ``members``'
rules) turns a layer tar into an overlay lower directory; ``store`` keeps layers by chain id,
images and names under one lock; ``load`` ties them together; ``use`` is what ``run`` calls;
``commands`` the CLI (``load``, ``images``, ``image``, ``rmi``). ``busybox`` stays built in
(``rootfs.ensure_image``).
"""
