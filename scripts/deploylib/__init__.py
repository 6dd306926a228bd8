"""scripts/deploy-check: build the image offline and run the Compose stack for real, on loopback."""
