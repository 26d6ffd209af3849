"""Serving a saved SPM over HTTP with live deletion (`spm-gen serve`; needs `pip install spm-gen[serve]`)."""
