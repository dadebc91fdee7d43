{
  "targets": [
    {
      "target_name": "clock",
      "sources": ["clock.c"]
    }
  ]
}
