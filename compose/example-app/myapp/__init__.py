"""An example handler module, run by the example image (compose/example-app/Dockerfile)."""
