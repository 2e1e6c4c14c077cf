-- The session's staging tables of one write (writeback.write_segments). ``token`` is unique per write,
-- so two writers (two months, or two runs of one month) never load into each other's tables, even
-- where temporary objects are visible across sessions (the embedded emulator).
CREATE OR REPLACE TEMPORARY TABLE {{ w.market_segment_table }}_STAGE_{{ token }} (
    MARKET_KEY     VARCHAR NOT NULL,
    SEGMENT_MONTH  DATE    NOT NULL,
    SEGMENT_ID     NUMBER(4, 0),
    MODEL_VERSION  VARCHAR NOT NULL,
    ALGORITHM      VARCHAR NOT NULL,
    RUN_ID         VARCHAR NOT NULL
);
CREATE OR REPLACE TEMPORARY TABLE {{ w.migration_table }}_STAGE_{{ token }} (
    MARKET_KEY           VARCHAR NOT NULL,
    SEGMENT_MONTH        DATE    NOT NULL,
    PREVIOUS_MONTH       DATE,
    PREVIOUS_SEGMENT_ID  NUMBER(4, 0),
    SEGMENT_ID           NUMBER(4, 0),
    MOVED                BOOLEAN NOT NULL
);
CREATE OR REPLACE TEMPORARY TABLE {{ w.profile_table }}_STAGE_{{ token }} LIKE {{ w.profile_table }};
CREATE OR REPLACE TEMPORARY TABLE {{ w.feature_table }}_STAGE_{{ token }} LIKE {{ w.feature_table }};
