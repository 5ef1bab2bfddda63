"""``pycni-run load``: every image of an archive verified, unpacked and put in the store.

All of it is checked and unpacked in the load's temporary directory first: manifests, each
config against its digest and its ``rootfs.diff_ids`` against the manifest's layers, each layer
blob against its digest (when the archive gives one) and its tar against its diff id, while it
streams through the unpacker. Only when every image is complete does ``Store.commit`` rename
the new layers and records into place, under the store's lock. A layer the store already has
(same chain id) is not read at all.
"""

from __future__ import annotations

import os
import tempfile

from pycni_run.errors import RunError
from pycni_run.images import manifest, unpack
from pycni_run.images.config import parse_config
from pycni_run.images.digests import Digest, chain_ids
from pycni_run.images.manifest import BlobRef, ImagePlan
from pycni_run.images.source import Source, open_source
from pycni_run.images.store import StagedImage, StagedLayer, Store

__all__ = ["load"]


def _stage_layer(source: Source, blob: BlobRef, diff_id: Digest, chain: Digest,
                 staging: str) -> StagedLayer:
    label = str(blob.digest or diff_id)
    directory = tempfile.mkdtemp(prefix="layer-", dir=staging)
    with source.open(blob.path) as stream:
        got = unpack.unpack_layer(stream, os.path.join(directory, "diff"), label=label)
    if blob.digest is not None and got.digest != blob.digest:
        raise RunError(f"layer {blob.digest} is corrupt: its blob hashes to {got.digest}")
    if blob.size is not None and got.stored != blob.size:
        raise RunError(f"layer {label} is corrupt: {got.stored} bytes, the manifest says "
                       f"{blob.size}")
    if got.diff_id != diff_id:
        raise RunError(f"layer {label} ({blob.path}) is corrupt: its content hashes to "
                       f"{got.diff_id}, the image config says {diff_id}")
    return StagedLayer(chain_id=chain, diff_id=diff_id, digest=got.digest, size=got.size,
                       directory=directory)


def _stage_image(store: Store, source: Source, plan: ImagePlan, staging: str,
                 staged: dict[Digest, StagedLayer]) -> StagedImage:
    config_bytes = manifest.read_blob(source, plan.config.path, plan.config.digest)
    config = parse_config(config_bytes)
    if len(config.diff_ids) != len(plan.layers):
        raise RunError(f"image {plan.config}: its config lists {len(config.diff_ids)} layers, "
                       f"the manifest {len(plan.layers)}")
    layers = []
    for blob, diff_id, chain in zip(plan.layers, config.diff_ids, chain_ids(config.diff_ids),
                                    strict=True):
        if chain not in staged:
            staged[chain] = (StagedLayer(chain_id=chain, diff_id=diff_id)
                             if store.has_layer(chain)
                             else _stage_layer(source, blob, diff_id, chain, staging))
        layers.append(staged[chain])
    return StagedImage(config=config_bytes, layers=tuple(layers), names=plan.tags)


def load(store: Store, path: str) -> list[StagedImage]:
    """Load ``path`` ("-" = stdin) into ``store``; the images it held. RunError, with nothing
    left in the store, if any part of it is missing, corrupt or unsafe."""
    with store.staging() as staging, open_source(path, staging) as source:
        plans = manifest.read_plans(source)
        staged: dict[Digest, StagedLayer] = {}
        images = [_stage_image(store, source, plan, staging, staged) for plan in plans]
        store.commit(images, staging)
    return images
