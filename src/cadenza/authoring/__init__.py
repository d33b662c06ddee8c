"""Authoring: @task, @pipeline, refs and the context, as users write them."""
