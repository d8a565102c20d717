"""An example taskpack for flask-tasks: its task types are in `flask_tasks_example_pack.tasks`."""
