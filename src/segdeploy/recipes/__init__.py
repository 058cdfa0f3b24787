"""The seed guides as data (recipes) and the resumable runner that carries one out."""
