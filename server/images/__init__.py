"""Images: root file systems jobs run in (the store, builds, imports, the catalogue, the image commands)."""
