from allocator.cli import app

app()
