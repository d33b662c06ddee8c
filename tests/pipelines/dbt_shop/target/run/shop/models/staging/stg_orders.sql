
  create view "test"."opsdata_try"."stg_orders__dbt_tmp"
    
    
  as (
    select id, customer_id, amount, status
from "test"."opsdata_try"."raw_orders"
where status <> 'cancelled'
  );