"""Simulated skies: one truth → Chandra event files, exposure maps, catalogue rows, images."""
