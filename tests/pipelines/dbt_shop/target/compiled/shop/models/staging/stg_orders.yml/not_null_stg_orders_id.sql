
    
    



select id
from "test"."opsdata_try"."stg_orders"
where id is null


