"""Fleet operations (internal): what becomes of a task after its handler ran or its worker died, the reaper, the
delayed-task mover and their schedule, fleet statistics and dead letters."""
