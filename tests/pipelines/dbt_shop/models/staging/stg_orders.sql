select id, customer_id, amount, status
from {{ source('shop', 'raw_orders') }}
where status <> 'cancelled'
