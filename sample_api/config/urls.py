"""URLs of the sample API (see docs/sample_api.md)."""

from carts.views import CartItemViewSet, CartViewSet
from catalog.views import CategoryViewSet, ProductViewSet
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from drf_redis_toolkit.metrics import metrics_view

router = DefaultRouter()
router.register("categories", CategoryViewSet, basename="category")
router.register("products", ProductViewSet, basename="product")
router.register("cart/items", CartItemViewSet, basename="cart-item")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("api/cart/", CartViewSet.as_view({"get": "retrieve"}), name="cart"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include(router.urls)),
    # Prometheus (docs/observability.md); guard it in production (network policy or auth).
    path("metrics", metrics_view, name="metrics"),
]
