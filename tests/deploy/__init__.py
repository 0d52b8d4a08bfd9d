"""Tests of deploy/k8s and the Dockerfile."""
