-- Paid orders only, with the day number of the 90-day window.
select order_id, customer_id, day, amount
from {{ source('shop', 'raw_orders') }}
where status = 'paid'
