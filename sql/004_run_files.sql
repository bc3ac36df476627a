-- The input files of each run move from one jsonb array in etl.sync_runs to a table of their
-- own: a day of a million agent_details files made that array a 130 MB value, held whole in
-- memory by the client. Rows are now written a batch at a time while the files are read.

CREATE TABLE etl.sync_run_files (
    run_id     bigint  NOT NULL REFERENCES etl.sync_runs (run_id) ON DELETE CASCADE,
    file_index integer NOT NULL,  -- the order the run read the files in, from 0
    file       text    NOT NULL,  -- relative to the data folder, as in the errors tables
    bytes      bigint  NOT NULL,
    sha256     text    NOT NULL,
    PRIMARY KEY (run_id, file_index)
);

INSERT INTO etl.sync_run_files (run_id, file_index, file, bytes, sha256)
SELECT r.run_id, (f.n - 1)::integer, f.entry ->> 'file', (f.entry ->> 'bytes')::bigint,
       f.entry ->> 'sha256'
  FROM etl.sync_runs r, jsonb_array_elements(r.input_files) WITH ORDINALITY AS f (entry, n);

ALTER TABLE etl.sync_runs DROP COLUMN input_files;
