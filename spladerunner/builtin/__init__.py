"""Model folders shipped inside the package (data only): `loading.BUILTIN_MODELS` names them."""
