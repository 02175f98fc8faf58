"""The user interface: the command line, the chat REPL and the training dashboard.

The only layer that imports rich and prompt-toolkit; everything below it is usable without them.
"""
