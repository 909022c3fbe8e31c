"""Small helpers shared by the VLM and the dense code (atomic files, strict PIL decoding); torch-free."""
