"""A plot's journey from both ends: protocol, stream, sender, receiver, landing on a drive."""
