"""Ray Serve: the HTTP ingress (REST API, and later chat, dashboard and Slack) and the LLM deployment."""
