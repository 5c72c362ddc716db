"""Every user ranked by the chat's own recommender: the forked worker processes (``shards``) and the one
top-N over all users (``ranking``) that the graph and the database export write. Imports the chat."""
