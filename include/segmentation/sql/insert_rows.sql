INSERT INTO {{ table }} ({{ columns | join(", ") }}) VALUES ({% for _ in columns %}%s{{ ", " if not loop.last }}{% endfor %})
