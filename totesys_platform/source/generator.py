"""A deterministic synthetic totesys at any scale, shaped like the real one.

Scale 1 matches the real 2024-11-14 volumes (11,175 sales orders, 4,640 purchase orders, one transaction
and one payment per order); the fact tables grow linearly with scale, the small dimensions
logarithmically. Orders are created on weekdays 08:00-18:59 at about :09-:10 seconds past the minute,
each with its transaction and payment at the same instant; payments are marked paid at 07:55:11 on their
payment date (most of them, once that date has passed). Everything comes from one numpy Generator
seeded by `seed`, so the same seed gives identical data.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from totesys_platform.catalog import MONEY, SOURCE_TABLES_BY_NAME

START = dt.datetime(2022, 11, 3, 14, 20, 52)
END = dt.datetime(2024, 11, 14, 15, 34, 0)
REAL_COUNTS = {
    "sales_order": 11_175,
    "purchase_order": 4_640,
    "design": 472,
    "address": 30,
    "counterparty": 20,
    "staff": 20,
}

DEPARTMENTS = [
    ("Sales", "Manchester", "Richard Roma"),
    ("Purchasing", "Manchester", "Naomi Lapaglia"),
    ("Production", "Leeds", "Chester Ming"),
    ("Dispatch", "Leds", "Mark Hanna"),  # the typo is in the real source
    ("Finance", "Manchester", "Jordan Belfort"),
    ("Facilities", "Manchester", "Shelley Levene"),
    ("Communications", "Leeds", "Ann Blake"),
    ("HR", "Leeds", "James Link"),
]
CURRENCIES = ["GBP", "USD", "EUR"]
PAYMENT_TYPES = ["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"]
DESIGN_NAMES = [
    "Steel",
    "Soft",
    "Granite",
    "Concrete",
    "Frozen",
    "Bronze",
    "Plastic",
    "Cotton",
    "Metal",
    "Fresh",
    "Wooden",
    "Rubber",
]
FILE_LOCATIONS = [
    "/usr",
    "/lost+found",
    "/etc/periodic",
    "/private",
    "/lib",
    "/opt/include",
    "/Users",
    "/System",
    "/home/user/dir",
    "/var/mail",
]
FIRST = [
    "Jeremie",
    "Deron",
    "Jeanette",
    "Ana",
    "Magdalena",
    "Korey",
    "Raphael",
    "Oswaldo",
    "Brody",
    "Jazmyn",
    "Meda",
    "Imani",
    "Stan",
    "Rigoberto",
    "Tom",
    "Pierre",
    "Lucy",
    "Irving",
    "Christy",
    "Mae",
]
LAST = [
    "Franey",
    "Beier",
    "Erdman",
    "Glover",
    "Zieme",
    "Hermann",
    "Rippin",
    "Bergstrom",
    "Ratke",
    "Kuhn",
    "Cremin",
    "Walsh",
    "O'Keefe",
    "O'Hara",
    "Runolfsdottir",
    "Hane",
    "Toy",
    "Wiza",
    "Kovacek",
    "D'Amore",
]
STREETS = [
    "Herzog Via",
    "Alexie Cliffs",
    "Sincere Fort",
    "Bryce Common",
    "Grady Turnpike",
    "O'Conner Plains",
    "Kemmer Ridge",
    "Stehr Lodge",
]
CITIES = [
    "New Patienceburgh",
    "Aliso Viejo",
    "Lake Charles",
    "Maggiofurt",
    "Fort Shadburgh",
    "Sayreville",
    "Olsonside",
    "Hackensack",
]
DISTRICTS = ["Avon", "Buckinghamshire", "Cambridgeshire", "Bedfordshire", "Berkshire"]
COUNTRIES = [
    "Turkey",
    "San Marino",
    "Democratic People's Republic of Korea",
    "Svalbard & Jan Mayen Islands",
    "Falkland Islands (Malvinas)",
    "Iraq",
    "Austria",
    "Cote d'Ivoire",
    "Portugal",
    "Ukraine",
]
COMPANY_TAILS = ["and Sons", "Inc", "LLC", "Group", "- Lakin", "and Ratke"]


def _dimension_count(table: str, scale: float) -> int:
    growth = 1 + math.log10(scale) if scale > 1 else 1.0
    return max(1, round(REAL_COUNTS[table] * growth))


def _business_instants(rng: np.random.Generator, n: int, start: dt.datetime, end: dt.datetime) -> np.ndarray:
    """n sorted datetime64[ms] on weekdays 08:00-18:59 at :09-:10 seconds, between start and end."""
    days = np.arange(np.datetime64(start.date(), "D"), np.datetime64(end.date(), "D") + 1)
    days = days[np.is_busday(days)]
    picked = days[rng.integers(0, len(days), n)].astype("datetime64[ms]")
    offset_ms = (
        rng.integers(8, 19, n) * 3_600_000
        + rng.integers(0, 60, n) * 60_000
        + rng.integers(9, 11, n) * 1_000
        + rng.integers(0, 1000, n)
    )
    instants = np.sort(picked + offset_ms.astype("timedelta64[ms]"))
    return np.clip(instants, np.datetime64(start, "ms"), np.datetime64(end, "ms"))


def _stamp(values: np.ndarray) -> pl.Series:
    return pl.Series(values.astype("datetime64[us]"))


def _money(cents: np.ndarray) -> pl.Series:
    c = pl.Series(cents).cast(pl.Int64)
    text = (c // 100).cast(pl.String) + "." + (c % 100).cast(pl.String).str.zfill(2)
    return text.cast(MONEY)


def _pick(rng: np.random.Generator, options: list[str], n: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


def _iso_date(days_since_epoch: np.ndarray) -> pl.Series:
    return pl.Series(days_since_epoch.astype("datetime64[D]")).dt.strftime("%Y-%m-%d")


def _typed(table: str, columns: dict) -> pl.DataFrame:
    spec = SOURCE_TABLES_BY_NAME[table]

    def column(values):
        is_objects = isinstance(values, np.ndarray) and values.dtype == object
        return values.tolist() if is_objects else values

    return pl.DataFrame({c.name: column(columns[c.name]) for c in spec.columns}).cast(dict(spec.schema))


def _address(rng: np.random.Generator, n: int) -> dict:
    return {
        "address_id": _ids(n),
        "address_line_1": [f"{rng.integers(1, 99999)} {s}" for s in _pick(rng, STREETS, n)],
        "address_line_2": np.where(rng.random(n) < 0.67, None, _pick(rng, STREETS, n)),
        "district": np.where(rng.random(n) < 0.47, None, _pick(rng, DISTRICTS, n)),
        "city": _pick(rng, CITIES, n),
        "postal_code": [
            f"{z:05d}-{e:04d}" if e % 3 == 0 else f"{z:05d}"
            for z, e in zip(rng.integers(0, 100000, n), rng.integers(0, 10000, n), strict=True)
        ],
        "country": _pick(rng, COUNTRIES, n),
        "phone": [
            f"{a:04d} {b:06d}" for a, b in zip(rng.integers(0, 10000, n), rng.integers(0, 10**6, n), strict=True)
        ],
    }


def _counterparty(rng: np.random.Generator, n: int, n_addr: int) -> dict:
    names = [f"{a} {b}" for a, b in zip(_pick(rng, LAST, n), _pick(rng, COMPANY_TAILS, n), strict=True)]

    def contacts() -> list[str]:
        return [f"{a} {b}" for a, b in zip(_pick(rng, FIRST, n), _pick(rng, LAST, n), strict=True)]

    return {
        "counterparty_id": _ids(n),
        "counterparty_legal_name": names,
        "legal_address_id": rng.integers(1, n_addr + 1, n),
        "commercial_contact": np.where(rng.random(n) < 0.1, None, contacts()),
        "delivery_contact": np.where(rng.random(n) < 0.1, None, contacts()),
    }


def _staff(rng: np.random.Generator, n: int) -> dict:
    first, last = _pick(rng, FIRST, n), _pick(rng, LAST, n)
    return {
        "staff_id": _ids(n),
        "first_name": first,
        "last_name": last,
        "department_id": rng.integers(1, len(DEPARTMENTS) + 1, n),
        "email_address": [
            f"{f}.{s}@terrifictotes.com".lower().replace(" ", "") for f, s in zip(first, last, strict=True)
        ],
    }


def _lookups() -> dict[str, dict]:
    """The small fixed tables: departments, currencies and payment types."""
    return {
        "department": {
            "department_id": _ids(len(DEPARTMENTS)),
            "department_name": [d[0] for d in DEPARTMENTS],
            "location": [d[1] for d in DEPARTMENTS],
            "manager": [d[2] for d in DEPARTMENTS],
        },
        "currency": {"currency_id": _ids(len(CURRENCIES)), "currency_code": CURRENCIES},
        "payment_type": {"payment_type_id": _ids(len(PAYMENT_TYPES)), "payment_type_name": PAYMENT_TYPES},
    }


def _design(rng: np.random.Generator, n: int) -> dict:
    """Designs are created over the whole period (the first eight at its start) and never updated."""
    created = np.concatenate([np.full(8, np.datetime64(START, "ms")), _business_instants(rng, n - 8, START, END)])
    names = _pick(rng, DESIGN_NAMES, n)
    return {
        "design_id": _ids(n),
        "created_at": created,
        "design_name": names,
        "file_location": _pick(rng, FILE_LOCATIONS, n),
        "file_name": [
            f"{name.lower()}-{day.astype('datetime64[D]').astype(str).replace('-', '')}-{tag:04x}.json"
            for name, day, tag in zip(names, created, rng.integers(0, 0xFFFF, n), strict=True)
        ],
        "last_updated": created,
    }


def generate_dimensions(rng: np.random.Generator, scale: float) -> dict[str, pl.DataFrame]:
    n_addr, n_cp, n_staff = (_dimension_count(t, scale) for t in ("address", "counterparty", "staff"))
    tables = {
        "address": _address(rng, n_addr),
        "counterparty": _counterparty(rng, n_cp, n_addr),
        "staff": _staff(rng, n_staff),
        **_lookups(),
    }
    for cols in tables.values():  # the seed rows of every table but design are stamped at the start
        seed = np.full(len(next(iter(cols.values()))), np.datetime64(START, "ms"))
        cols.update(created_at=seed, last_updated=seed)
    tables["design"] = _design(rng, _dimension_count("design", scale))
    stamped = ("created_at", "last_updated")
    return {
        name: _typed(name, {k: _stamp(v) if k in stamped else v for k, v in tables[name].items()})
        for name in ("address", "counterparty", "currency", "department", "design", "staff", "payment_type")
    }


def _ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1)


def _orders(rng: np.random.Generator, n: int, dims: dict[str, pl.DataFrame]) -> dict[str, np.ndarray]:
    """Columns shared by sales and purchase orders (ids, stamps, links, agreed dates)."""
    created = _business_instants(rng, n, START, END)
    created_day = created.astype("datetime64[D]").astype(np.int64)
    delivery_lag = np.where(rng.random(n) < 0.001, rng.integers(8, 625, n), rng.integers(0, 8, n))
    return {
        "created_at": created,
        "last_updated": created,
        "staff_id": rng.integers(1, dims["staff"].height + 1, n),
        "counterparty_id": rng.integers(1, dims["counterparty"].height + 1, n),
        "currency_id": rng.integers(1, 4, n),
        "agreed_delivery_date": _iso_date(created_day + delivery_lag),
        "agreed_payment_date": _iso_date(created_day + rng.integers(0, 7, n)),
        "agreed_delivery_location_id": rng.integers(1, dims["address"].height + 1, n),
    }


def generate(scale: float = 1.0, seed: int = 42) -> dict[str, pl.DataFrame]:
    """All 11 tables as typed frames, deterministic for (scale, seed)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = np.random.default_rng(seed)
    tables = generate_dimensions(rng, scale)
    design_created = tables["design"]["created_at"].to_numpy().astype("datetime64[ms]")

    n_sales = max(1, round(REAL_COUNTS["sales_order"] * scale))
    sales = _orders(rng, n_sales, tables)
    designs_available = np.searchsorted(design_created, sales["created_at"], side="right")
    sales_cents = rng.integers(200, 401, n_sales)
    sales_units = rng.integers(1001, 100_000, n_sales)
    sales.update(
        sales_order_id=np.arange(1, n_sales + 1),
        design_id=np.floor(rng.random(n_sales) * designs_available).astype(np.int64) + 1,
        units_sold=sales_units,
        unit_price=_money(sales_cents),
    )

    n_purchases = max(1, round(REAL_COUNTS["purchase_order"] * scale))
    purchases = _orders(rng, n_purchases, tables)
    purchase_cents = rng.integers(332, 99_908, n_purchases)
    purchase_units = rng.integers(1, 1000, n_purchases)
    code_space, offset = 36**7, int(rng.integers(0, 36**7))
    codes = (offset + np.arange(n_purchases, dtype=np.int64) * 1_000_000_007) % code_space
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    purchases.update(
        purchase_order_id=np.arange(1, n_purchases + 1),
        item_code=["".join(alphabet[(c // 36 ** np.arange(6, -1, -1)) % 36]) for c in codes],
        item_quantity=purchase_units,
        item_unit_price=_money(purchase_cents),
    )
    tables["sales_order"] = _typed(
        "sales_order",
        {**sales, "created_at": _stamp(sales["created_at"]), "last_updated": _stamp(sales["last_updated"])},
    )
    tables["purchase_order"] = _typed(
        "purchase_order",
        {**purchases, "created_at": _stamp(purchases["created_at"]), "last_updated": _stamp(purchases["last_updated"])},
    )
    tables["transaction"], tables["payment"] = _transactions_and_payments(
        rng, tables, sales_units * sales_cents, purchase_units * purchase_cents
    )
    return tables


def _transactions_and_payments(
    rng: np.random.Generator, tables: dict[str, pl.DataFrame], sale_cents: np.ndarray, purchase_cents: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One transaction per order (ids in time order) and one payment per transaction."""
    sales, purchases = tables["sales_order"], tables["purchase_order"]
    common = ["created_at", "counterparty_id", "currency_id", "agreed_payment_date"]
    orders = pl.concat(
        [
            sales.select(
                common, sales_order_id="sales_order_id", purchase_order_id=pl.lit(None, pl.Int32)
            ).with_columns(transaction_type=pl.lit("SALE"), payment_type_id=pl.lit(1), cents=pl.Series(sale_cents)),
            purchases.select(
                common, sales_order_id=pl.lit(None, pl.Int32), purchase_order_id="purchase_order_id"
            ).with_columns(
                transaction_type=pl.lit("PURCHASE"), payment_type_id=pl.lit(3), cents=pl.Series(purchase_cents)
            ),
        ]
    ).sort("created_at", "sales_order_id", "purchase_order_id", nulls_last=True)
    n = orders.height
    orders = orders.with_columns(transaction_id=pl.int_range(1, n + 1))
    transaction = _typed(
        "transaction",
        {
            "transaction_id": orders["transaction_id"],
            "transaction_type": orders["transaction_type"],
            "sales_order_id": orders["sales_order_id"],
            "purchase_order_id": orders["purchase_order_id"],
            "created_at": orders["created_at"],
            "last_updated": orders["created_at"],
        },
    )
    pay_date = orders["agreed_payment_date"].str.to_date()
    paid_at = pay_date.cast(pl.Datetime("us")) + pl.Series(
        (rng.integers(0, 1000, n) + 28_511_000).astype("timedelta64[ms]")
    ).cast(pl.Duration("us"))
    created = orders["created_at"]
    # Paid at 07:55:11 on the payment date, once it has passed, for most payments (never before creation).
    paid = (pay_date < END.date()).to_numpy() & (rng.random(n) < 0.9) & (paid_at > created).to_numpy()
    last_updated = pl.select(pl.when(pl.Series(paid)).then(paid_at).otherwise(created)).to_series()
    payment = _typed(
        "payment",
        {
            "payment_id": orders["transaction_id"],
            "created_at": created,
            "last_updated": last_updated,
            "transaction_id": orders["transaction_id"],
            "counterparty_id": orders["counterparty_id"],
            "payment_amount": _money(orders["cents"].to_numpy()),
            "currency_id": orders["currency_id"],
            "payment_type_id": orders["payment_type_id"],
            "paid": paid,
            "payment_date": orders["agreed_payment_date"],
            "company_ac_number": rng.integers(10_000_000, 100_000_000, n),
            "counterparty_ac_number": rng.integers(10_000_000, 100_000_000, n),
        },
    )
    return transaction, payment
