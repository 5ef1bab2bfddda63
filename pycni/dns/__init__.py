"""Container name resolution: the resolver behind the `pycni-dns` (alias `dnsname`) plugin.

The plugin's side (``names``, ``records``, ``control``) imports only the standard library: it
writes an attachment's record and tells the resolver over its control socket. Everything that
speaks DNS (dnspython) is imported by the resolver process only (``python -m pycni.dns``).
"""
