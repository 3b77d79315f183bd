"""The dataset names ``load_dataset`` accepts (no imports: the CLI reads them for its help)."""

DATASET_NAMES: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest-small", "gowalla", "lastfm-kg")
