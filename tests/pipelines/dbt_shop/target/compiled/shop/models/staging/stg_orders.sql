select id, customer_id, amount, status
from "test"."opsdata_try"."raw_orders"
where status <> 'cancelled'