import pytest
from pydantic import ValidationError

from include.segmentation.config import SegmentationConfig, load_config


def test_defaults_are_the_documented_contract():
    config = SegmentationConfig()
    assert config.warehouse.fact_sale.name == "FACT_SALE"
    assert config.warehouse.customer.loyalty_status == "LOYALTY_STATUS"
    assert config.model.embedding_dim == 32
    assert 6 <= config.sequences.seq_len <= 24


def test_identifiers_are_upper_cased():
    config = SegmentationConfig.model_validate({"warehouse": {"fact_sale": {"name": "sales_lines"}}})
    assert config.warehouse.fact_sale.name == "SALES_LINES"


@pytest.mark.parametrize(
    "bad", ["x; DROP TABLE FACT_SALE", "FACT_SALE--", "a'b", 'a"b', "1ABC", "db.schema.table", "", "a b"]
)
def test_injection_attempts_in_names_are_rejected(bad):
    with pytest.raises(ValidationError, match="not a plain Snowflake identifier") as err:
        SegmentationConfig.model_validate({"warehouse": {"fact_sale": {"sales_amount": bad}}})
    assert "sales_amount" in str(err.value)


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="fact_sales"):
        SegmentationConfig.model_validate({"warehouse": {"fact_sales": {}}})


def test_overrides_apply_and_validate():
    config = SegmentationConfig().with_overrides(seq_len=18, algorithm="dbscan", n_clusters=None, epochs=5)
    assert (config.sequences.seq_len, config.clustering.algorithm, config.model.epochs) == (18, "dbscan", 5)
    assert config.clustering.n_clusters is None
    with pytest.raises(ValidationError, match="seq_len"):
        SegmentationConfig().with_overrides(seq_len=5)
    with pytest.raises(ValidationError, match="static_weight"):
        SegmentationConfig().with_overrides(static_weight=1.5)
    with pytest.raises(KeyError, match="learning_rate"):
        SegmentationConfig().with_overrides(learning_rate=0.1)


def test_load_config_from_yaml(tmp_path, monkeypatch):
    path = tmp_path / "segmentation.yaml"
    path.write_text("warehouse:\n  database: analytics\n  schema: seg\nclustering:\n  k_max: 6\n")
    monkeypatch.setenv("SEGMENTATION_ARTIFACTS", str(tmp_path / "out"))
    config = load_config(path)
    assert (config.warehouse.database, config.warehouse.schema_) == ("ANALYTICS", "SEG")
    assert config.clustering.k_max == 6
    assert config.artifacts_dir == str(tmp_path / "out")


def test_k_range_must_be_ordered():
    with pytest.raises(ValidationError, match="k_min"):
        SegmentationConfig.model_validate({"clustering": {"k_min": 8, "k_max": 4}})


@pytest.mark.parametrize("word", ["select", "TABLE", "order", "Group"])
def test_reserved_words_are_refused(word):
    with pytest.raises(ValidationError, match="reserved Snowflake keyword"):
        SegmentationConfig.model_validate({"warehouse": {"run_table": word}})


def test_result_tables_must_not_collide():
    with pytest.raises(ValidationError, match="must differ"):
        SegmentationConfig.model_validate({"warehouse": {"run_table": "MARKET_SEGMENT"}})
    with pytest.raises(ValidationError, match="must differ"):
        SegmentationConfig.model_validate({"warehouse": {"market_segment_table": "FACT_SALE"}})


def test_cross_field_checks():
    with pytest.raises(ValidationError, match=r"history_months \(6\) must be at least seq_len \(24\)"):
        SegmentationConfig.model_validate({"sequences": {"seq_len": 24, "history_months": 6}})
    with pytest.raises(ValidationError, match="min_active_months"):
        SegmentationConfig.model_validate({"sequences": {"seq_len": 6, "min_active_months": 7}})


def test_clearing_n_clusters_means_automatic():
    config = SegmentationConfig.model_validate({"clustering": {"n_clusters": 5}})
    assert config.with_overrides(n_clusters=None).clustering.n_clusters is None


def test_static_features_default_to_the_seed_seven_and_refuse_duplicates_and_no_weight():
    from pydantic import ValidationError

    from include.segmentation.config import SegmentationConfig
    from include.segmentation.core.features import STATIC_FEATURES

    assert SegmentationConfig().feature_names == STATIC_FEATURES
    discount = {"name": "avg_discount", "template": "discount_rate", "kind": "fraction"}
    with pytest.raises(ValidationError, match=r"feature name\(s\) \['avg_discount'\] appear more than once"):
        SegmentationConfig.model_validate({"static_features": [discount, discount]})
    with pytest.raises(ValidationError, match="at least one feature needs a weight above 0"):
        SegmentationConfig.model_validate({"static_features": [discount | {"weight": 0}]})
    # weight 0: profiled, not clustered
    lines = {"name": "lines", "template": "distinct_count", "column": "product_line", "kind": "count", "weight": 0}
    config = SegmentationConfig.model_validate({"static_features": [discount, lines]})
    assert [f.name for f in config.clustered_features()] == ["avg_discount"]
    # a feature on a column the loader made up is profiled, not clustered, unless configured
    assert config.clustered_features(derived={"avg_discount"}) == ()
    clustered = config.model_copy(update={"cluster_derived_features": True})
    assert [f.name for f in clustered.clustered_features(derived={"avg_discount"})] == ["avg_discount"]
