"""The base layer: errors and problems, never-clobber file writes, YAML output, templating, shared types.

It imports nothing of the stages (spec, plan, secrets, node configs, manifests, assets) nor of their consumers
(netboot, images, lab); every one of them may import it. tests/test_layering.py holds it to that.
"""
