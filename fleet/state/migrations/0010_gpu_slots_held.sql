-- A team host that did not answer at release: its machine's processes may still run on their GPUs
-- until the watchdog's deadline. Its slots stay taken until `held_until` (that deadline plus a
-- slack), then the next reservation's reclaim frees them; NULL: freed when the lease ends.
ALTER TABLE gpu_slots ADD COLUMN held_until TEXT;
