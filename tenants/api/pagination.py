from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def paginated_schema(serializer_class, *, name: str | None = None):
    """The OpenAPI body of a page of `serializer_class` items, for views that paginate by hand."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer(
        name=name or f"Paginated{serializer_class.__name__.removesuffix('Serializer')}List",
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


def wrapped_list_schema(key: str, serializer_class, *, name: str):
    """The OpenAPI body `{key: [items]}` of list endpoints shaped like the seed's `versions`."""
    from drf_spectacular.utils import inline_serializer

    return inline_serializer(name=name, fields={key: serializer_class(many=True)})
