"""A product row shaped like the seed guide's (name, description, price, stock, category)."""

from django.db import models


class BenchProduct(models.Model):
    name = models.CharField(max_length=100)
    description = models.TextField()
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.IntegerField()
    category_id = models.IntegerField()
    sku = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "cache_bench_app"
        ordering = ["id"]
