"""The on-robot model store: installed versions, active/previous/candidate slots, crash recovery."""
