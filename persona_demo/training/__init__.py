"""Training the plug on LaMP or persona-voice examples: the loss, the loop, checkpoint selection."""
