"""``manage.py seed_demo --products N --users N``: realistic demo data, fast and idempotent.

Creates categories, tags, ``N`` products (slugs ``demo-000001``...), users
``demo1..demoN`` (password ``demo-pass``), staff ``admin`` (``admin-pass``) and
a small cart for each demo user. Rows are inserted with ``bulk_create`` in
batches; what already exists is left alone, so running it twice changes
nothing. The password hash is computed once and shared by the demo users
(PBKDF2 is slow on purpose; hashing it 1000 times would take minutes).
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from carts.models import Cart, CartItem
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog.models import Category, Product, Tag
from drf_redis_toolkit import invalidation

BATCH = 1000
CATEGORIES = [
    ("Electronics", "Phones, laptops, headphones and everything that needs charging."),
    ("Books", "Fiction, non-fiction and comics."),
    ("Home & Kitchen", "Cookware, storage and small appliances."),
    ("Toys & Games", "Board games, puzzles and building sets."),
    ("Sports & Outdoors", "Gear for running, cycling, camping and the gym."),
    ("Clothing", "Shirts, trousers, jackets and shoes."),
    ("Beauty", "Skin care, hair care and fragrances."),
    ("Garden", "Tools, seeds, pots and outdoor furniture."),
    ("Grocery", "Coffee, tea, snacks and pantry staples."),
    ("Automotive", "Car care, tools and accessories."),
    ("Music", "Instruments, vinyl and studio equipment."),
    ("Office", "Paper, pens, desks and chairs."),
]
TAGS = ["new", "sale", "bestseller", "eco", "gift", "limited", "premium", "clearance"]
ADJECTIVES = [
    "Compact", "Classic", "Deluxe", "Ergonomic", "Lightweight", "Portable", "Rugged",
    "Sleek", "Smart", "Vintage", "Wireless", "Handmade", "Modular", "Quiet", "Heavy-duty",
]  # fmt: skip
MATERIALS = [
    "Bamboo", "Steel", "Cotton", "Leather", "Oak", "Ceramic", "Aluminium", "Glass",
    "Wool", "Carbon", "Linen", "Copper",
]  # fmt: skip
NOUNS = [
    "Lamp", "Backpack", "Kettle", "Notebook", "Speaker", "Chair", "Jacket", "Bottle",
    "Watch", "Keyboard", "Planter", "Blender", "Tent", "Guitar", "Mug", "Desk",
]  # fmt: skip


class Command(BaseCommand):
    help = "Create demo data: categories, tags, N products, demo1..demoN users and their carts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--products", type=int, default=1000, help="products (default 1000)")
        parser.add_argument("--users", type=int, default=20, help="demo users (default 20)")
        parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")

    def handle(self, *args: Any, **options: Any) -> None:
        n_products, n_users = options["products"], options["users"]
        if n_products < 0 or n_users < 0:
            raise CommandError("--products and --users must be >= 0")
        rng = random.Random(options["seed"])
        started = time.perf_counter()
        with transaction.atomic():
            categories = self._categories()
            tags = self._tags()
            made_products = self._products(n_products, categories, tags, rng)
            made_users, made_carts = self._users_and_carts(n_users, rng)
            # Demo rows went in with plain bulk_create (no per-row invalidation):
            # invalidate the lists they appear in once, at the commit.
            invalidation.invalidate(
                namespaces=["categories:all"],
                keys=[
                    "products:all",
                    *(f"category:{c.pk}:products" for c in categories),
                    *(f"cart:user:{uid}" for uid in made_carts),
                ],
            )
        elapsed = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"seed_demo: {len(categories)} categories, {len(tags)} tags, "
                f"{made_products} new products (of {n_products}), {made_users} new users, "
                f"{len(made_carts)} new carts in {elapsed:.2f}s"
            )
        )
        self.stdout.write(
            f"users demo1..demo{n_users} / demo-pass; staff admin / admin-pass"
            if n_users
            else "staff admin / admin-pass"
        )

    def _categories(self) -> list[Category]:
        wanted = {f"cat-{i + 1:02d}": (name, text) for i, (name, text) in enumerate(CATEGORIES)}
        existing = set(Category.objects.filter(slug__in=wanted).values_list("slug", flat=True))
        Category.objects.bulk_create(
            Category(slug=slug, name=name, description=text)
            for slug, (name, text) in wanted.items()
            if slug not in existing
        )
        return list(Category.objects.filter(slug__in=wanted).order_by("pk"))

    def _tags(self) -> list[Tag]:
        existing = set(Tag.objects.filter(slug__in=TAGS).values_list("slug", flat=True))
        Tag.objects.bulk_create(
            Tag(slug=slug, name=slug.title()) for slug in TAGS if slug not in existing
        )
        return list(Tag.objects.filter(slug__in=TAGS).order_by("pk"))

    def _products(
        self, count: int, categories: list[Category], tags: list[Tag], rng: random.Random
    ) -> int:
        slugs = [f"demo-{i:06d}" for i in range(1, count + 1)]
        existing: set[str] = set()
        for start in range(0, len(slugs), BATCH):
            existing.update(
                Product.objects.filter(slug__in=slugs[start : start + BATCH]).values_list(
                    "slug", flat=True
                )
            )
        missing = [slug for slug in slugs if slug not in existing]
        plain = Product._base_manager  # signal-less bulk insert; invalidated once by handle()
        through = Product.tags.through
        for start in range(0, len(missing), BATCH):
            rows = []
            for slug in missing[start : start + BATCH]:
                name = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {rng.choice(NOUNS)}"
                rows.append(
                    Product(
                        slug=slug,
                        name=name,
                        description=(
                            f"{name}, made to last. Model {slug.upper()}; "
                            f"ships in {rng.randint(1, 5)} working days."
                        ),
                        price=Decimal(rng.randint(199, 99999)) / 100,
                        stock=rng.randint(0, 500),
                        category=rng.choice(categories),
                    )
                )
            plain.bulk_create(rows)
            created = dict(plain.filter(slug__in=[r.slug for r in rows]).values_list("slug", "pk"))
            links = [
                through(product_id=created[row.slug], tag_id=tag.pk)
                for row in rows
                for tag in rng.sample(tags, rng.randint(0, 2))
            ]
            through.objects.bulk_create(links)
        return len(missing)

    def _users_and_carts(self, count: int, rng: random.Random) -> tuple[int, list[int]]:
        user_model = get_user_model()
        if not user_model.objects.filter(username="admin").exists():
            user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass")
        names = [f"demo{i}" for i in range(1, count + 1)]
        existing = set(
            user_model.objects.filter(username__in=names).values_list("username", flat=True)
        )
        missing = [name for name in names if name not in existing]
        if missing:
            password = make_password("demo-pass")
            user_model.objects.bulk_create(
                user_model(username=name, email=f"{name}@example.com", password=password)
                for name in missing
            )
        user_ids = list(user_model.objects.filter(username__in=names).values_list("pk", flat=True))
        with_cart = set(Cart.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True))
        new_cart_users = [uid for uid in user_ids if uid not in with_cart]
        Cart.objects.bulk_create(Cart(user_id=uid) for uid in new_cart_users)
        carts = Cart.objects.filter(user_id__in=new_cart_users)
        product_ids = list(Product.objects.values_list("pk", flat=True)[:200])
        if product_ids:
            CartItem.objects.bulk_create(
                CartItem(cart=cart, product_id=pid, quantity=rng.randint(1, 3))
                for cart in carts
                for pid in rng.sample(product_ids, min(len(product_ids), rng.randint(1, 3)))
            )
        return len(missing), new_cart_users
