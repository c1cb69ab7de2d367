"""Dataset classes (webdataset streams and map-style folders) and loader helpers."""
