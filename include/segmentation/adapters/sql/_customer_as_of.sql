{#- Join condition for the customer dimension: with a type-2 dimension, the version valid on the
    last day of the window (valid_to is exclusive); included inside an ON clause on alias c. -#}
{%- if w.customer.is_type2 %}
        AND c.{{ w.customer.valid_from }} < %(window_end)s
        AND (c.{{ w.customer.valid_to }} IS NULL OR c.{{ w.customer.valid_to }} >= %(window_end)s)
{%- endif %}
