"""Containers on this machine: the image build (``make image``) and the chart's pods run as
containers (``make chart-up``). Developer tooling around podman or docker; no service imports
it."""
