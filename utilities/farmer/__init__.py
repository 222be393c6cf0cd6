"""Farmer role: following chia's logs for coins, blocks and farm health."""
