"""HTTP routes, one module per resource; assembled by `app.main.create_app`."""
