select customer_id, count(*) as orders, sum(amount) as total
from "test"."opsdata_try"."stg_orders"
group by customer_id