"""A minimal stand-in for the safetensors package (load_file / save_file of safetensors.torch),
for machines with Debian's python3-torch but no safetensors package (Debian has none): enough for
diffusers' scripts/convert_diffusers_to_original_*.py. The format is the published one: 8-byte
little-endian header length, JSON header {name: {dtype, shape, data_offsets}}, raw little-endian
data. Put the parent folder first on PYTHONPATH."""
