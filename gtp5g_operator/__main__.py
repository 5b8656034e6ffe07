from gtp5g_operator.cli import entry

entry()
